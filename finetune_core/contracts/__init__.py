"""The engine's contracts: what the web app and the workers may know about the engine.

Torch-free by rule (a test imports it in a fresh interpreter and checks): the web
process imports these modules to build its forms, its `/v1` mapping and its readers of
run folders, so each fact about the engine is written here once.

- `data`: the data formats the engine reads, and their labels;
- `train`: every training setting (type, default, bounds, help, surfaces) and the presets;
- `layout`: where a run keeps its checkpoints, adapter and manifest, and the manifest reader.
- `prompts`: judge prompt placeholders per kind, their check and plain rendering.
- `hooks`: the one progress / phase / stop protocol of train, transfer and evaluate.
- `egress`: which addresses judge and candidate endpoints may reach, and the allow-list.
- `packing`: the split's held-out count, first-fit packing into rows and the optimizer
  steps of a run: the engine trains by them and the pre-flight estimate counts by them.
"""
