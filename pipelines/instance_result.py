"""Entry point: the nucleus-instance result of docs/results.md (see histoclr.recipes.instances)."""

from histoclr.recipes.instances import main

if __name__ == "__main__":
    main()
