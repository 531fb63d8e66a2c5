from portability.cli import main

main()
