"""trainpod's trainer: what runs inside every image (and in a subprocess for ``--remote local``).

It imports torch, transformers and peft; the ``trainpod`` CLI never imports this package. The
entrypoint is ``python -m trainpod_trainer [--spec FILE]`` (see ``__main__``), which runs
:func:`trainpod_trainer.run.main`.
"""
