"""`semisam export`: a round's pseudo-labels and confidence maps as files other tools open.

`nifti` (NIfTI files, and `export_round`, which hands the other formats to `formats`), `ome`
(OME-Zarr for viewers, on the building blocks of `ngff`), `dicom_seg` (DICOM-SEG on the source
series), `formats` (the per-volume writers of the non-NIfTI formats, their options and checks).
"""
