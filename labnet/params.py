"""A run's config as MLflow params, and back: the one place that writes them (the tracker) and parses them
(the sweep summary, `labnet compare`'s formats and plot)."""

from __future__ import annotations

from typing import Any

MAX_PARAM_LENGTH = 6000  # MLflow's limit for a param value


def param_entries(flat: dict[str, Any]) -> tuple[list[tuple[str, str]], list[str]]:
    """Config entries as MLflow params (strings within MLflow's length limit) and the truncated keys."""
    entries, truncated = [], []
    for key, value in flat.items():
        text = "None" if value is None else str(value)
        if len(text) > MAX_PARAM_LENGTH:
            text = text[: MAX_PARAM_LENGTH - 15] + "...[truncated]"
            truncated.append(key)
        entries.append((key, text))
    return entries, truncated


def param_value(text: Any) -> Any:
    """A param as MLflow stores it (``str`` of the config value) back as the value: None, a bool, a number,
    a list or mapping (``"[50]"`` is ``[50]``), else the text."""
    if not isinstance(text, str):
        return text
    if text == "None":
        return None
    if text in ("True", "False"):
        return text == "True"
    for number in (int, float):
        try:
            return number(text)
        except ValueError:
            pass
    if text.startswith(("[", "{")):
        import yaml

        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            return text
        if isinstance(value, (list, dict)):
            return value
    return text
