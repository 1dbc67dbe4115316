use thiserror::Error;

/// Everything the model crate can refuse, each with a message naming the problem.
#[derive(Debug, Error)]
pub enum OvsegError {
    #[error("invalid model configuration: {0}")]
    Config(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("invalid input: {0}")]
    Input(String),
    #[error("checkpoint {path}: {message}")]
    Checkpoint { path: String, message: String },
    #[error("{path}: {message}")]
    Io { path: String, message: String },
}
