"""The stress scenarios, one module each (``scenario_<name>(ctx, res)``); :data:`quantramp.trader.stress.SCENARIOS` lists them."""
