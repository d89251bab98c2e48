"""The MLflow model that `mlflow models serve` runs (MLflow's models-from-code: this file is logged
with the model and run when it loads; nothing is pickled). The work is `serving.RawPairScorer`."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

from matching_cli.serving import RawPairScorer


class MatchingModel(PythonModel):
    def load_context(self, context) -> None:  # type: ignore[no-untyped-def]
        text_model = context.artifacts.get("text_model")
        self.scorer = RawPairScorer.load(
            Path(context.artifacts["model"]), Path(text_model) if text_model else None
        )

    def predict(self, context, model_input: pd.DataFrame, params=None) -> np.ndarray:  # type: ignore[no-untyped-def]
        return self.scorer.score(model_input)


mlflow.models.set_model(MatchingModel())
