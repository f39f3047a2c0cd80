from lit_regression.cli import main

main()
