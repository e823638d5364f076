"""The firmware side of edgeaudio (C front end, model-to-firmware generator, host TFLM check).

A package so that its scripts import each other and the tests import them without path edits:
run them from the repository root as ``python -m firmware_demo.<script>``.
"""
