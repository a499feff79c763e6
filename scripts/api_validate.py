"""Post the 150 iris rows to a running service and print how many it answers right (``make api-validate``).

These are the rows every model was trained on, so the figure is in-sample: it proves the service answers what the
model learned (a smoke test of the whole path), not how accurate the model is on new flowers. Validation numbers
are in each model's card and the research journey.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request

from sklearn.datasets import load_iris

from ml_production_service.features import FEATURE_NAMES


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="base URL of the running service")
    parser.add_argument("--min-accuracy", type=float, default=0.95, help="exit non-zero below this in-sample share")
    args = parser.parse_args()
    iris = load_iris()
    correct = 0
    model = "?"
    for row, target in zip(iris.data, iris.target, strict=True):
        body = json.dumps(dict(zip(FEATURE_NAMES, map(float, row), strict=True))).encode()
        request = urllib.request.Request(
            f"{args.url}/predict", data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - URL is the user's own service
                answer = json.load(response)
        except urllib.error.URLError as error:
            print(f"cannot reach {args.url}/predict: {error}", file=sys.stderr)
            return 2
        model = f"{answer['model_type']} {answer['model_version']}"
        correct += answer["prediction"] == iris.target_names[target]
    accuracy = correct / len(iris.target)
    print(
        f"model {model}: {correct}/{len(iris.target)} iris rows correct ({accuracy:.4f}), in-sample (training rows), "
        "not an estimate of accuracy"
    )
    return 0 if accuracy >= args.min_accuracy else 1


if __name__ == "__main__":
    sys.exit(main())
