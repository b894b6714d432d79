"""Pretraining of the demo's tiny models (CLIP, BLIP captioner) on captioned stills of the demo renderer.

Only the demo needs this: real runs name real weights. See `eva.demo.pretrain.run` for the stage's work.
"""
