from histoclr.cli import main

main()
