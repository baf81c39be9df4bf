from msml_dsl.cli import entry_point

entry_point()
