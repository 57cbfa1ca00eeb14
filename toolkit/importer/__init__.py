"""The import stage: adopt an existing fork or patch as new patches of a managed series.

Sources become *units*, one per mail, commit or plain diff: a patch or mbox file (plain
`diff -ruN` output, `git diff`, or `git format-patch` mails split and read by `git mailsplit` and
`git mailinfo`, as `git am` reads them), a git range in a local repository (one unit per commit),
or a pair of wheels or sdists compared member by member (one unit). Each unit is parsed into
per-file changes, their paths resolved against the tree (the `-p` strip level is detected) and
checked (no absolute paths, no `..`, nothing in `.git`, no binary, symlink or submodule changes),
and written back as canonical git diff sections, hunk bodies byte for byte (CR included).

The pinned base is materialized with the existing series applied; each unit must apply there
with zero fuzz (and, unless allowed, zero offset), else every failing file and hunk is reported
and nothing is written. A single diff (or archive pair) taken against stock over a series that changes the
same files is imported as its delta against the series, refused in one line when it is not the series
plus a delta (`delta`). Applied units are committed in groups (`--split`), with headers added to
the commit message, rendered by the export stage, applied once more to a fresh base to prove they
apply cleanly and re-export byte-identically, and only then written to the series directory.

Modules, in the order a unit passes through them: `diff_lexer` (file sections and hunks of a diff),
`paths` (tree paths, unsafe paths refused), `features` (files to features), `units` (the Source interface),
the three sources `file_source`, `git_source` and `pair_source` (with `archives`, which finds the wheels and sdists),
`delta` (a diff against stock reduced to its delta against the series),
`applying` (zero-fuzz checks and commits in the checkout), `messages` and `plan` (the new patches),
`proof` (the round trip) and `stage` (the whole import); `records` holds its options and product.
"""

from toolkit.importer.archives import Archive, resolve_archive
from toolkit.importer.features import FeatureRule, UnmatchedChanges, load_feature_map, rules_from_flags
from toolkit.importer.file_source import FileSource
from toolkit.importer.git_source import GitRangeSource
from toolkit.importer.pair_source import PairSource
from toolkit.importer.plan import SPLIT_MODES
from toolkit.importer.records import ImportOptions, ImportResult, NewPatch
from toolkit.importer.stage import import_into_series
from toolkit.importer.units import Source, Unit

__all__ = [
    "SPLIT_MODES",
    "Archive",
    "FeatureRule",
    "FileSource",
    "GitRangeSource",
    "ImportOptions",
    "ImportResult",
    "NewPatch",
    "PairSource",
    "Source",
    "Unit",
    "UnmatchedChanges",
    "import_into_series",
    "load_feature_map",
    "resolve_archive",
    "rules_from_flags",
]
