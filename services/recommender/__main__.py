"""`python -m services.recommender`: serve RecommenderService until SIGTERM."""

from services.core.main import run
from services.recommender.app import RecommenderApp
from services.recommender.settings import RecommenderSettings


def main() -> None:
    run(RecommenderSettings, "RECSYS_RECOMMENDER_", RecommenderApp)


if __name__ == "__main__":
    main()
