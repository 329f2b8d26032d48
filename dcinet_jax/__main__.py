from dcinet_jax.cli import main

main()
