"""Transfer: starting a model from pretrained weights (an mgpipe model, a pyskl / MMAction2
checkpoint), across keypoint layouts, and writing mgpipe models in MMAction2's format.

- mmaction.py: the name map between mgpipe's networks and MMAction2's (ResNet3dSlowOnly with
  I3DHead, RGBPoseConv3D with RGBPoseHead), reading foreign checkpoints safely, the export.
- layouts.py: the first convolution's input channels mapped between keypoint layouts by name.
- init.py: applying an init file to a model, with the report of what was loaded, initialised
  fresh and ignored.
"""
