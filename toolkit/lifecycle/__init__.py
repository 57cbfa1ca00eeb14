"""The series lifecycle: carry a series to a new upstream release, gather evidence, retire what upstream absorbed.

`rebase` replays one version's series onto another pinned release (three-way merges, git rerere with
resolutions remembered in the cache) and writes the result as that release's series, with a range-diff
for review and per-patch evidence that upstream already has a patch (`upstream`). `review` refreshes
those review files after hand edits; `retire` drops patches upstream carries. The per-patch outcome
strings they record are `toolkit.records.outcome.Outcome`.
"""
