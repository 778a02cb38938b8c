"""The book's chapters and the parameters each one takes.

A chapter's parameters are the union of a few declared dataclasses (`cpbook.params.param`
fields): the scale preset, the pretraining config, the fine-tuning config and the chapter's own.
From that one declaration come the chapter's `parameters` cell (`parameters_cell`, which a test
keeps identical to the stored notebook, with the types papermill's `--help-notebook` shows),
`cpbook list`, and the checks `cpbook run` makes before it starts a kernel (`check_values`).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from .llm import prompts
from .llm.tasks import (NLI_LANGUAGES, REFUSAL_SURFACES, ZERO_SHOT_TASKS, check_code_chapter, check_icl_chapter,
                        check_language_dose_chapter, check_refusal_chapter)
from .params import Param, check_all, defaults, param, param_like, specs
from .synthetic.config import (ConjugateSweep, DoseGrid, FinetuneConfig, ForgettingVariants, GEstimation, Preset,
                               SyntheticConfig, check_doses, check_grid, make_configs)


@dataclass(frozen=True)
class ICLChapter:
    """Chapter 5: which stored results to compare."""
    base: str = param("the pretrained model (a registry name)", default="gemma-3-270m")
    tuned: str = param("the same model after instruction tuning (made here)", default="gemma-3-270m-instruct")
    cross_family: list[str] = param("other families, shown beside the base",
                                    default=["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"])
    reference: str = param("the language of the instruction-tuning data", default="en")
    n_demos: int = param_like(prompts.PARAMS["n_demos"], default=2)
    demo_counts: list[int] = param("demonstrations per prompt set of the curve (base and tuned)",
                                   1, prompts.MAX_DEMOS, default=[2, 4, 8])


@dataclass(frozen=True)
class CodeChapter:
    """Chapter 6: which stored zero-shot results to compare."""
    base: str = param("the pretrained model (a registry name)", default="gemma-3-270m")
    tuned: list[str] = param("the base after code tuning, one model per dose (made here)",
                             default=["gemma-3-270m-code", "gemma-3-270m-code-strong"])
    cross_family: list[str] = param("models of other families, shown beside the base",
                                    default=["qwen2.5-coder-0.5b-instruct", "smollm2-135m-instruct"])
    tasks: list[str] = param("the authored tasks", choices=ZERO_SHOT_TASKS,
                             default=list(ZERO_SHOT_TASKS))
    languages: list[str] = param("the languages compared", choices=NLI_LANGUAGES,
                                 default=list(NLI_LANGUAGES))
    reference: str = param("the language whose drop is compared with the others'", default="en")


@dataclass(frozen=True)
class RefusalChapter:
    """Chapter 7: which stored refusal runs to compare."""
    base: str = param("the pretrained model (a registry name)", default="gemma-3-270m")
    tuned: list[str] = param("the base after refusal tuning, one model per dose (made here)",
                             default=["gemma-3-270m-refusal", "gemma-3-270m-refusal-strong"])
    cross_family: list[str] = param("models of other families, shown beside the base",
                                    default=["smollm2-135m-instruct"])
    surfaces: list[str] = param("the surface forms compared", choices=REFUSAL_SURFACES,
                                default=list(REFUSAL_SURFACES))
    reference: str = param("the language of the tuning data", default="en")


@dataclass(frozen=True)
class LanguageDoseChapter:
    """Chapter 8, language-model part: which stored ICL results to compare."""
    base: str = param("the pretrained model (a registry name)", default="gemma-3-270m")
    english: str = param("the base after instruction tuning on English (chapter 5's model)",
                         default="gemma-3-270m-instruct")
    multilingual: str = param("the base after the same tuning on English, French and Spanish (made here)",
                              default="gemma-3-270m-instruct-en-fr-es")
    tuning_languages: list[str] = param("the languages of the multilingual tuning data",
                                        default=["en", "fr", "es"])
    lm_doses: list[str] = param("the English instruction tuning at several learning rates (made here)",
                                default=["gemma-3-270m-instruct-lr3e-5", "gemma-3-270m-instruct",
                                         "gemma-3-270m-instruct-lr3e-4", "gemma-3-270m-instruct-lr1e-3"])


# (dataclass, optional): optional groups default to None, "take the value from the preset".
_SYNTHETIC = ((Preset, False), (SyntheticConfig, True))
_FINETUNED = _SYNTHETIC + ((FinetuneConfig, True),)
CHAPTERS = {
    "01_pretraining": _SYNTHETIC,
    "02_forgetting": _FINETUNED + ((ForgettingVariants, False),),
    "03_task_inference": _FINETUNED + ((GEstimation, False),),
    "04_conjugate_prompting": _FINETUNED + ((ConjugateSweep, False),),
    "05_icl_vs_instructions": ((ICLChapter, False),),
    "06_code_tuning": ((CodeChapter, False),),
    "07_refusal_tuning": ((RefusalChapter, False),),
    "08_dose_and_languages": _FINETUNED + ((DoseGrid, False), (LanguageDoseChapter, False)),
}


def parameter_specs(stem: str) -> dict[str, Param]:
    """Every parameter chapter `stem` takes, in the order its parameters cell lists them."""
    out = {}
    for cls, optional in CHAPTERS[stem]:
        out.update(specs(cls, optional=optional))
    return out


def default_values(stem: str) -> dict:
    """The value each parameter has in the chapter's parameters cell (None: from the preset)."""
    out = {}
    for cls, optional in CHAPTERS[stem]:
        given = defaults(cls)
        out.update({name: None if optional else given[name] for name in specs(cls)})
    return out


def preset_values(preset: str = "cpu") -> dict:
    """What the pretraining and fine-tuning parameters resolve to under a preset."""
    cfg, ft = make_configs(preset)
    return {**asdict(cfg), **asdict(ft)}


def _literal(value) -> str:
    """A value as the parameters cell writes it: strings in double quotes, as papermill does."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    return repr(value)


def parameters_cell(stem: str) -> str:
    """The source of chapter `stem`'s parameters cell: one line per parameter with its value, its
    type (as a `# type:` comment, which papermill's --help-notebook reads) and its description."""
    lines = []
    if any(optional for _, optional in CHAPTERS[stem]):
        lines.append("# None: the value of the preset (chapter 1 shows the resolved configuration)")
    values = default_values(stem)
    for name, spec in parameter_specs(stem).items():
        lines.append(f"{name} = {_literal(values[name])}  # type: {spec.type_name}  {spec.doc}")
    return "\n".join(lines)


def synthetic_configs(stem: str, values: dict) -> tuple | None:
    """The (pretraining, fine-tuning) configs chapter `stem` trains with these parameters (the
    fine-tuning one None for a chapter that only pretrains); None for a chapter of the language
    models, which reads stored results."""
    groups = [cls for cls, _ in CHAPTERS[stem]]
    if SyntheticConfig not in groups:
        return None
    given = {**default_values(stem), **values}
    synthetic = set(specs(Preset)) | set(specs(SyntheticConfig)) | set(specs(FinetuneConfig))
    cfg, ft = make_configs(**{k: v for k, v in given.items() if k in synthetic})
    return cfg, (ft if FinetuneConfig in groups else None)


def check_values(stem: str, values: dict) -> None:
    """Raise ParameterError or ValueError, as the chapter's first cell would, before any work:
    unknown names, wrong types, values out of range, unknown models or languages."""
    given = {**default_values(stem), **values}
    checked = check_all(parameter_specs(stem), given)
    if stem == "05_icl_vs_instructions":
        check_icl_chapter(**checked)
        return
    if stem == "06_code_tuning":
        check_code_chapter(**checked)
        return
    if stem == "07_refusal_tuning":
        check_refusal_chapter(**checked)
        return
    synthetic = set(specs(Preset)) | set(specs(SyntheticConfig)) | set(specs(FinetuneConfig))
    _, ft = make_configs(**{k: v for k, v in checked.items() if k in synthetic})
    if stem == "08_dose_and_languages":
        grid = check_grid(DoseGrid(**{k: checked[k] for k in specs(DoseGrid)}))
        check_doses(grid, ft)
        check_language_dose_chapter(**{k: checked[k] for k in specs(LanguageDoseChapter)})

