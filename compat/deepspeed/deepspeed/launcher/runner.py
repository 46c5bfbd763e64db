from deepspeed_ext.launcher.runner import DEEPSPEED_ENVIRONMENT_NAME, main, parse_args

__all__ = ["DEEPSPEED_ENVIRONMENT_NAME", "main", "parse_args"]

if __name__ == "__main__":
    main()
