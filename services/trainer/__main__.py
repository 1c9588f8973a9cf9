"""`python -m services.trainer`: serve TrainerService until SIGTERM."""

from services.core.main import run
from services.trainer.app import TrainerApp
from services.trainer.consumer import tune_garbage_collector
from services.trainer.settings import TrainerSettings


def main() -> None:
    tune_garbage_collector()
    run(TrainerSettings, "RECSYS_TRAINER_", TrainerApp)


if __name__ == "__main__":
    main()
