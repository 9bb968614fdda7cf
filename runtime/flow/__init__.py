"""The flow language: model, parsing and validation, templating, the pure execution engine."""
