"""Small pieces every fedai HTTP service shares: configuration from the environment, body limits,
typed error responses, and the uvicorn launcher."""
