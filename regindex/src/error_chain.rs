//! An error with every cause it carries, on one line: what logs and dead-letter reasons
//! say, so that "error sending request" comes with its "Connection refused".

use std::error::Error;

/// `error`, then each of its sources that adds something, separated by `": "`. A source
/// whose text the line already holds (an error that prints its cause) is left out.
pub fn error_chain(error: &dyn Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("request for tags of r failed: {0}")]
        Prints(#[source] Middle),
        #[error("request failed")]
        Hides(#[source] Middle),
    }

    #[derive(Debug, thiserror::Error)]
    #[error("error sending request")]
    struct Middle(#[source] std::io::Error);

    fn refused() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused")
    }

    #[test]
    fn every_cause_once() {
        assert_eq!(
            error_chain(&Outer::Prints(Middle(refused()))),
            "request for tags of r failed: error sending request: Connection refused"
        );
        assert_eq!(
            error_chain(&Outer::Hides(Middle(refused()))),
            "request failed: error sending request: Connection refused"
        );
        assert_eq!(error_chain(&refused()), "Connection refused");
    }
}
