"""Teachers: pretrained audio models that shape the student at training time only."""
