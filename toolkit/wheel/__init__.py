"""dynamo-base wheels: the overlay build on the stock binary wheel, source builds, provenance, verification."""
