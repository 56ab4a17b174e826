"""The tasks a dataset selects through `dataset.feedback` (see base.py for what a task owns).

| feedback            | task             | objective                     | evaluators                        |
|---------------------|------------------|-------------------------------|-----------------------------------|
| implicit (default)  | ranking.py       | BPR triples                   | full ranking (AUC, HR@K, NDCG@K)  |
| explicit            | rating.py        | rating MSE (minibatch/full)   | RMSE, MAE (+ spectrum on request) |
| completion          | completion.py    | full-batch MSE on all obs.    | reconstruction vs W* + spectrum   |
"""
from lambdaopt.tasks import completion, ranking, rating  # noqa: F401  (each registers its task)
from lambdaopt.tasks.base import TASKS, Task, lower_is_better, register_task, task_class

__all__ = ["TASKS", "Task", "lower_is_better", "register_task", "task_class"]
