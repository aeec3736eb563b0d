// A Kafka Streams topology nobody here wrote the library of: counts the events per key into a
// compacted topic (key -> 8-byte big-endian long, Kafka's LongSerializer) and copies each event
// to a second topic. PROCESSING_GUARANTEE: exactly_once_v2 or at_least_once; COMMIT_MS: commit.interval.ms;
// CACHE_BYTES: statestore.cache.max.bytes (0: every update goes to the changelog and the output at once).
import java.util.Properties;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.*;
import org.apache.kafka.streams.kstream.*;
import org.apache.kafka.streams.state.Stores;

public class CountPerKey {
    public static void main(String[] args) {
        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, "count-per-key");
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, System.getenv("ONCEPROOF_KAFKA_BOOTSTRAP"));
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, System.getenv("PROCESSING_GUARANTEE"));
        p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, System.getenv("COMMIT_MS"));
        p.put(StreamsConfig.STATE_DIR_CONFIG, System.getenv("STATE_DIR"));
        p.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, System.getenv().getOrDefault("CACHE_BYTES", "10485760"));
        p.put(StreamsConfig.consumerPrefix("session.timeout.ms"), "6000");
        p.put(StreamsConfig.consumerPrefix("group.instance.id"), "count-" + System.getenv("ONCEPROOF_REPLICA"));
        StreamsBuilder b = new StreamsBuilder();
        KStream<String, String> events = b.stream(args[0], Consumed.with(Serdes.String(), Serdes.String()));
        events.to(args[1], Produced.with(Serdes.String(), Serdes.String()));
        events.groupByKey().count(Materialized.as(Stores.inMemoryKeyValueStore("counts")))
              .toStream().to(args[2], Produced.with(Serdes.String(), Serdes.Long()));
        KafkaStreams streams = new KafkaStreams(b.build(), p);
        Runtime.getRuntime().addShutdownHook(new Thread(streams::close));
        streams.start();
    }
}
