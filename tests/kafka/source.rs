//! The `kafka` source and the `kafka_topic` fence against a real broker: a record
//! the producer was told is at offset `o` is position `o + 1` in both, a partition
//! without a commit gives no checkpoint, an empty one no fence position; and
//! `tidemark checkpoint show` runs both once.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::FutureRecord;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tidemark::checkpoint::sources::kafka::KafkaReader;
use tidemark::config::kafka::{KafkaConfig, KafkaFenceConfig, KafkaSourceConfig};
use tidemark::gateway::fence::kafka::KafkaFence;
use tidemark::kafka::{Health, Kafka};
use tidemark::position::PositionVector;

use crate::app;
use crate::kafka_broker::KafkaBroker;

const TOPIC: &str = "offsets";
const GROUP: &str = "offsets-view";

fn client(broker: &KafkaBroker) -> Arc<Kafka> {
    let config = KafkaConfig {
        brokers: vec![broker.address()],
        request_timeout: Duration::from_secs(2),
    };
    Kafka::connect(&config, Some(TOPIC.into())).expect("client")
}

fn commit(broker: &KafkaBroker, partition: i32, offset: i64) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.address())
        .set("group.id", GROUP)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, partition, Offset::Offset(offset))
        .unwrap();
    consumer.commit(&tpl, CommitMode::Sync).expect("commit");
}

fn position(log: &str, at: u64) -> PositionVector {
    let mut v = PositionVector::new();
    v.set(log, at);
    v
}

/// A gateway config with the `offsets` source (logs `offsets-0`, `offsets-1`) and a
/// `kafka_topic` fence on it, for `checkpoint show`.
fn show_config(broker: &KafkaBroker) -> tidemark::config::Config {
    let toml = format!(
        r#"
[kafka]
brokers = ["{}"]
[upstreams.commands]
url = "http://127.0.0.1:7001"
[upstreams.view]
url = "http://127.0.0.1:7002"
[projections.offsets]
logs = ["offsets-0", "offsets-1"]
sources = ["kafka"]
[projections.offsets.kafka]
group = "{GROUP}"
topic = "{TOPIC}"
[[routes]]
name = "write"
kind = "write"
path = "/o/{{id}}"
upstream = "commands"
fence = {{ kafka_topic = "{TOPIC}" }}
[[routes]]
name = "read"
kind = "read"
path = "/o/{{id}}"
upstream = "view"
projection = "offsets"
"#,
        broker.address()
    );
    tidemark::config::Config::from_toml(&toml, None, &[]).unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_and_high_watermarks_are_next_offsets() {
    let broker = KafkaBroker::start();
    app::create_topic(&broker.address(), TOPIC, 2).await;
    let producer = app::producer(&broker.address());
    let mut last = -1;
    for i in 0..3 {
        let payload = format!("r{i}");
        let record = FutureRecord::<(), _>::to(TOPIC)
            .partition(0)
            .payload(&payload);
        let delivery = producer
            .send(record, Duration::from_secs(5))
            .await
            .expect("delivered");
        assert_eq!(delivery.partition, 0);
        last = delivery.offset;
    }
    assert_eq!(last, 2, "three records at offsets 0, 1, 2");

    let kafka = client(&broker);
    let fence = KafkaFence {
        kafka: kafka.clone(),
        config: KafkaFenceConfig {
            topic: TOPIC.into(),
            partitions: vec![0, 1],
            fallback: Duration::from_secs(5),
            logs: vec!["offsets-0".into(), "offsets-1".into()],
        },
    };
    let head = fence.read().await.expect("fence");
    assert_eq!(
        head,
        position("offsets-0", 3),
        "the last record (offset 2) is position 3; the empty partition 1 is left out"
    );
    assert_eq!(kafka.health(), Health::Ok);

    let reader = KafkaReader::new(
        kafka.clone(),
        KafkaSourceConfig {
            group: GROUP.into(),
            topic: TOPIC.into(),
            partitions: vec![0, 1],
            interval: Duration::from_millis(20),
        },
    );
    assert!(
        reader.read().await.expect("read").is_empty(),
        "no commit yet: no checkpoint, no invented 0"
    );
    // The projector applied offsets 0 and 1: it commits 2 (the next offset).
    commit(&broker, 0, 2);
    let applied = reader.read().await.expect("read");
    assert_eq!(applied, position("offsets-0", 2));
    assert!(
        !applied.covers(&head),
        "the write's record (offset 2) is not applied yet"
    );
    commit(&broker, 0, 3);
    let applied = reader.read().await.expect("read");
    assert!(applied.covers(&head), "{applied} covers {head}");

    // `tidemark checkpoint show` runs the source and the fence once.
    let (report, ok) = tidemark::cli_checkpoint::show(&show_config(&broker)).await;
    assert!(ok, "{report}");
    assert!(
        report.contains("projection offsets checkpoint, group offsets-view on topic offsets: offsets-0=3; no committed offset on offsets-1"),
        "{report}"
    );
    assert!(
        report.contains("route write fence, topic offsets (fallback 5s): offsets-0=3\n"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_partition_that_does_not_exist_fails_the_fence_and_show_says_why() {
    let broker = KafkaBroker::start();
    app::create_topic(&broker.address(), TOPIC, 1).await;
    let kafka = client(&broker);
    let fence = KafkaFence {
        kafka,
        config: KafkaFenceConfig {
            topic: TOPIC.into(),
            partitions: vec![0, 1],
            fallback: Duration::from_secs(5),
            logs: vec!["offsets-0".into(), "offsets-1".into()],
        },
    };
    let err = fence.read().await.expect_err("partition 1 does not exist");
    assert!(err.to_string().contains("partition 1"), "{err}");

    let (report, ok) = tidemark::cli_checkpoint::show(&show_config(&broker)).await;
    assert!(!ok, "the fence failed: {report}");
    assert!(
        report.contains("route write fence, topic offsets (fallback 5s): FAILED"),
        "{report}"
    );
    assert!(
        report.contains("WARNING: the topic has 1 partitions: offsets-1 do not exist"),
        "{report}"
    );
}
