"""The embedded demo's fixtures, apart from the library: its synthetic videos (`data`), the tiny CLIP,
captioner, detector, segmenter and VideoMAE stand-ins (`tiny`, `tiny_vision`, `tiny_videomae`) and
their pretraining (`pretrain`). Real runs name real data and real weights and use none of it; tests
and benchmarks build their small models here and load them through the library's real loaders.
"""
