//! RabbitMQ: topology, publishing with confirms, message formats, dead letters.
