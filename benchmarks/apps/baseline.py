"""The baseline a user would write: FastAPI + joblib the way the tutorials do it (served by uvicorn, 1 worker)."""

import os

import joblib
import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel

MODEL_TYPE = os.environ.get("BENCH_MODEL_TYPE", "random_forest")
REGISTRY = os.environ.get("BENCH_REGISTRY_DIR", "registry/prd")
CLASSES = ["setosa", "versicolor", "virginica"]
model = None if MODEL_TYPE == "heuristic" else joblib.load(f"{REGISTRY}/{MODEL_TYPE}/model.joblib")
app = FastAPI()


class Iris(BaseModel):
    sepal_length: float
    sepal_width: float
    petal_length: float
    petal_width: float


# No return annotation, as the tutorials write it: FastAPI would take one as a response model and validate the answer.
@app.post("/predict")
async def predict(iris: Iris):  # type: ignore[no-untyped-def]
    if model is None:  # the heuristic: two petal thresholds
        label = 0 if iris.petal_length < 2.0 else 1 if iris.petal_width < 1.7 else 2
    else:
        features = np.array([[iris.sepal_length, iris.sepal_width, iris.petal_length, iris.petal_width]])
        label = int(model.predict(features)[0])
    return {"prediction": CLASSES[label]}
