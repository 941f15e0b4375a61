/// What went wrong talking to the broker.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot connect to the broker: {0}")]
    Connect(#[source] lapin::Error),
    #[error("broker: {context}: {source}")]
    Amqp {
        context: &'static str,
        #[source]
        source: lapin::Error,
    },
    #[error("broker timed out {0}")]
    Timeout(&'static str),
    #[error("the broker refused (nack) the message to exchange {exchange:?} with routing key {routing_key:?}")]
    Nacked {
        exchange: String,
        routing_key: String,
    },
    /// Refused before sending: a value too long for its AMQP field would corrupt the frame,
    /// and the broker would close the whole connection.
    #[error("message not publishable: {0}")]
    Unpublishable(String),
    #[error("no queue is bound for routing key {routing_key:?} on exchange {exchange:?}")]
    Unroutable {
        exchange: String,
        routing_key: String,
    },
}

impl BusError {
    pub fn amqp(context: &'static str) -> impl FnOnce(lapin::Error) -> BusError {
        move |source| BusError::Amqp { context, source }
    }
}
