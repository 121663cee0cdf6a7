from ohlcv.cli import main

main()
