"""Text and language models: tokenisers, corpora as documents, the transformer's
per-token signals and generation. The audit of a language model is the same
audit as for classifiers; :mod:`jaxaudit.tasks.language` is its seam.
"""
