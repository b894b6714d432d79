"""Stage `evaluate`: models/trained/model.pt + val shards -> metrics/eval.json, per-class CSV,
confusion plot data, and the model card models/trained/README.md."""

from __future__ import annotations

import logging

from eva.config import load_params
from eva.data.clips import open_attribute_store
from eva.data.shards import list_shards
from eva.demo.tiny import is_random_weights
from eva.evaluate import PROTOCOL_KEYS, EvaluateConfig, eval_metrics, evaluate_views
from eva.metrics import confusion_records, write_per_class_csv
from eva.model_card import render_model_card, write_model_card
from eva.models.trained import load_trained_model
from eva.report import format_run_table
from eva.utils.dist import resolve_device
from eva.utils.io import write_json
from eva.utils.log import setup_logging
from stages._entry import run_stage, write_summary
from stages._layout import MODEL, MODEL_CARD, SHARDS, attributes
from stages._params import dataset_name

log = logging.getLogger("eva.stages.evaluate")


def main() -> None:
    setup_logging()
    params = load_params()
    name = dataset_name(params)
    cfg = EvaluateConfig.from_params(params)
    clips, crops = cfg.clips, cfg.crops
    device = resolve_device("auto")
    model, checkpoint = load_trained_model(MODEL, device)
    classes = checkpoint["classes"]
    result = evaluate_views(
        model,
        list_shards(SHARDS, "val"),
        clips=clips,
        crops=crops,
        batch_size=cfg.batch_size,
        store=open_attribute_store(attributes("val"), needed=model.method.uses_attributes, split="val"),
        device=device,
    )
    stage = checkpoint["stage"]
    seed = int(checkpoint["params"]["train"]["seed"])
    metrics = eval_metrics(result, model, dataset=name, stage=stage, seed=seed, clips=clips, crops=crops)
    compared = {k: v for k, v in metrics.items() if k not in PROTOCOL_KEYS}
    write_summary("metrics/eval.json", compared, "evaluate", sort_keys=False)
    write_json(
        "metrics/evaluate.json", {k: metrics[k] for k in PROTOCOL_KEYS}
    )  # run summary: how it was scored
    write_per_class_csv("metrics/per_class.csv", result.report, classes)
    predicted = result.scores.argmax(dim=1)
    write_json("metrics/plots/confusion.json", confusion_records(result.labels, predicted, classes))
    card = render_model_card(
        config=checkpoint["config"],
        dataset=name,
        stage=stage,
        metrics=metrics,
        classes=classes,
        train_params=checkpoint["params"],
        demo=name == "demo",
        random_backbone=is_random_weights(checkpoint["config"]["backbone"]),
    )
    write_model_card(MODEL_CARD, card)
    log.info("evaluation:\n%s", format_run_table(metrics))


if __name__ == "__main__":
    run_stage("evaluate", main)
