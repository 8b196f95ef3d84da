//! The `nats` source's reading of one consumer against a real broker: the ack floor,
//! and a filtered consumer counted up to the stream's head read before its snapshot.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy};
use futures_util::StreamExt;
use tidemark::checkpoint::sources::nats::NatsReader;
use tidemark::config::nats::{NatsConfig, NatsSourceConfig};
use tidemark::nats::Nats;

use crate::nats_server::NatsServer;

async fn reader(broker: &NatsServer) -> NatsReader {
    let config = NatsConfig {
        url: broker.url(),
        display: format!("127.0.0.1:{}", broker.port()),
        credentials_file: None,
        request_timeout: Duration::from_secs(2),
    };
    let nats = Arc::new(Nats::connect(&config).await.expect("client"));
    NatsReader::new(
        nats,
        NatsSourceConfig {
            stream: "S".into(),
            consumer: "c".into(),
            log: "users".into(),
            interval: Duration::from_millis(20),
        },
    )
}

async fn read(reader: &NatsReader) -> u64 {
    reader
        .read()
        .await
        .expect("read")
        .get("users")
        .expect("users")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_consumer_reaches_the_head_only_through_a_head_read_first() {
    let broker = NatsServer::start();
    let js = jetstream::new(async_nats::connect(broker.url()).await.unwrap());
    let stream = js
        .create_stream(jetstream::stream::Config {
            name: "S".into(),
            subjects: vec!["users.>".into(), "noise.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let consumer: jetstream::consumer::PullConsumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("c".into()),
            ack_policy: AckPolicy::Explicit,
            filter_subject: "users.>".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let publish = |subject: &'static str| {
        let js = js.clone();
        async move {
            js.publish(subject, "x".into())
                .await
                .unwrap()
                .await
                .unwrap()
                .sequence
        }
    };
    assert_eq!(publish("users.1").await, 1);
    // Delivered and acked, with no pull request left waiting afterwards.
    let mut batch = consumer.fetch().max_messages(1).messages().await.unwrap();
    let m = batch.next().await.expect("one message").unwrap();
    m.double_ack().await.unwrap();
    drop(batch);
    let head = {
        let mut last = 0;
        for _ in 0..3 {
            last = publish("noise.x").await;
        }
        last
    };
    assert_eq!(head, 4);

    let reader = reader(&broker).await;
    // Caught up on what it matches: its delivered message, not yet the head.
    assert_eq!(read(&reader).await, 1);
    // Next round: the head read before the snapshot counts.
    assert_eq!(read(&reader).await, head);

    // A matching message not yet delivered: the reading falls back to the ack floor
    // (the registry keeps the higher checkpoint it already has), and the head read
    // first no longer counts.
    assert_eq!(publish("users.2").await, 5);
    publish("noise.x").await;
    assert_eq!(read(&reader).await, 1);
}
