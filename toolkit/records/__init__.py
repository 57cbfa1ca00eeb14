"""The typed records the pipeline's stages pass on, one schema module per file format.

Each module defines the msgspec Structs of one document and the `encode`/`decode` that both its writer
and its reader use: `conformance` (OUT/conform/<project>-<version>-<tier>.json, written by `vpatch
conform`), `ci_summary` (OUT/ci-summary.json, written by `vpatch ci`, read by `vpatch report`), `evidence`
(a rebase's patches/<project>-NEW/evidence.json, written by `vpatch rebase` and `vpatch review`, read by
the next rebase, `retire`, the verdict, `ci` and `report`), `resolutions` (a rebase's
patches/<project>-NEW/resolutions/index.json, written by `vpatch rebase` and `vpatch resolutions export`,
read by the next rebase) and `verdict` (the default-engine verdict of
`vpatch status` and the summary). `status` holds the one enum of check and step statuses, `outcome` the
one enum of per-patch outcomes (apply, rebase, review). Files are
written as `json.dumps(..., indent=1, sort_keys=True)` of the record, so their bytes are those the
hand-built dicts gave; fields a reader does not know are ignored on decode.
"""
