"""edgeaudio.train: students, teachers, losses and the training loop (needs torch)."""
