"""``semisam predict``: segment new scans with a trained student (as ``nnUNetv2_predict`` does).

Per input scan (any file ingest reads, or a folder of DICOM slices):

1. read and validate it with the readers ingest uses (`semisam.pipeline.image_io`: same
   errors, same geometry);
2. the student's foreground probability by sliding-window inference
   (`semisam.workers.student.predict_probability`), optionally the mean over flips
   (``flip_axes``, test-time augmentation);
3. threshold (``> threshold``), optionally keep the largest 26-connected 3D component;
4. write ``OUT/<id>.nii.gz`` (uint8 {0,1}, intent ``label``; multi-class students: class
   values, below) and, on request,
   ``OUT/<id>_prob.nii.gz`` (float32 in [0, 1]) with the input's voxel grid and affine
   (voxel index -> world mm, RAS) as both qform and sform.

Files are written under a temporary name and renamed, the probability map before the label,
so a label file is there only when the scan is complete. Each label file's header
(``descrip``) names the prediction's fingerprint (student sha256 and the output-relevant
options); a rerun skips scans whose label (and, with ``probabilities``, probability map) is
there with the same fingerprint, and redoes the others.

Multi-class students (their checkpoint's ``meta["classes"]``, `checkpoint_classes`: ``K``
structures, ``K + 1`` softmax channels, channel ``c`` the class value ``values[c - 1]``):

* ``K > 1``: the label is the argmax of the ``K + 1`` channels (averaged over the flips) mapped
  to the class values (channel 0 -> 0), as `semisam evaluate` predicts; ``threshold`` does not
  apply (anything but its default 0.5 is refused); ``largest_component`` keeps each class's
  largest 26-connected component (the rest of that class becomes background);
* ``K = 1`` (one structure under another value or name): as a one-structure student, the
  label holding the class value instead of 1;
* ``OUT/<id>.nii.gz`` holds the class values (uint8, 0 background) and ``OUT/classes.json``
  names them (``{"1": "left", ...}``, as `semisam export` writes it), rewritten on every run;
* ``OUT/<id>_prob.nii.gz`` (``probabilities``) is the per-voxel confidence of that label: for
  ``K > 1`` the softmax probability of the winning channel (the argmax, background included),
  in ``[1 / (K + 1), 1]``, before any largest-component step (the one-structure map is the
  foreground probability, likewise before it). The winning probability was chosen over the
  top-two margin because it stays a probability, like the one-structure map: 1 where the
  student is sure, low where channels compete (boundaries between touching structures);
* the report names the classes and counts each one's voxels (``class_voxels``);
* ``flip_axes``: a flip along an axis that orders the structures (left/right ones) shows the
  student each one where the other lies; averaging it in mixes them up. ``semisam train``
  records those axes in the checkpoint (``meta["ordered_axes"]``) and they are left out of
  ``flip_axes`` with a warning (rounds do the same with ``student.flip_axes``).

A student with more than 2 channels but no class map, or whose class map does not fit its
channels, is refused before any scan (one line).

With ``address``, every scan is one Ray task (``num_cpus`` 1, ``num_gpus`` ``gpus_per_scan``)
on the cluster at that address (``local``: a Ray started on this machine); the nodes must
read the inputs and the checkpoint and write ``OUT`` (a shared file system).

Modules: `options` (what is asked and reported, the fingerprint), `inputs` (the scans named
and how each is read, through `semisam.pipeline.image_io`), `scan` (one scan: student,
label, outputs), `outputs` (the files in ``OUT``), `run` (the checks before any scan, then the
scans in this process or on Ray).
"""

from .inputs import check_unique_ids, collect_inputs
from .options import (
    PredictItem,
    PredictOptions,
    PredictReport,
    PredictStatus,
    check_options,
    fingerprint,
)
from .outputs import finished, output_paths, write_classes_file
from .run import predict
from .scan import predict_scan, segment, segment_classes, student_classes

__all__ = [
    "PredictItem",
    "PredictOptions",
    "PredictReport",
    "PredictStatus",
    "check_options",
    "check_unique_ids",
    "collect_inputs",
    "fingerprint",
    "finished",
    "output_paths",
    "predict",
    "predict_scan",
    "segment",
    "segment_classes",
    "student_classes",
    "write_classes_file",
]
