"""Language-model chapter: prompt material, prompt transforms and evaluation helpers."""
