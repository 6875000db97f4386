"""``python -m tessera.router.rebalance``: the rebalance worker (:mod:`.worker`)."""

from tessera.router.rebalance.worker import main

if __name__ == "__main__":
    main()
