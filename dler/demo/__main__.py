"""`python -m dler.demo`: run the demo (see `dler.demo.pipeline`)."""

from dler.demo.pipeline import main

if __name__ == "__main__":
    main()
