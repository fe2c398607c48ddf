"""The built-in default job: a small ViT trained on Fashion-MNIST, converted and compared."""
