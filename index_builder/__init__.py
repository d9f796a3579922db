"""index_builder: turn corpora into vector indexes for OneGen Explorer.

`index_builder.sources` reads corpora (Wikipedia, JSON Lines, parquet dumps, the authors'
precomputed entity vectors) into `onegen.documents.Document`s; the encoding and
index-writing steps consume those.
"""
