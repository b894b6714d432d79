"""Video attributes (label, caption, foreground, background, original, dynamic): the frozen models that
make them, run by `eva.attributes.pipeline` (the `attributes` stage).

Their storage, what training reads, is `eva.data.attribute_store`.
"""
