"""The dynamo-base plugin wheel: what stock vLLM lacks, delivered without patching it (docs/plugin.md).

`build.build_plugin` packs toolkit/serving/plugin/dynamo_base_plugin/ (code that runs inside a vLLM venv) into
a pure-Python wheel versioned with the series; `build.plugin_wheel` is the path other stages install.
"""
