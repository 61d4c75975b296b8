"""A masker kind from outside semisam: fills each prompt's box (the plugin of test_masker_plugin.py).

Its three modules are what a new kind needs: its settings (`settings.py`, torch-free), the masker
(`masker.py`) and one `register` call (`register.py`, named by the ``semisam.maskers`` entry
point in ``semisam_box_masker-0.1.dist-info/entry_points.txt``). No file of semisam is edited.
"""
