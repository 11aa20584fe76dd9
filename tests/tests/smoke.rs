//! The first end-to-end check: a tokio-postgres client through pgweir in both modes.

use weir_config::PoolMode;
use weir_tests::{app_config, connect, start_proxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_and_extended_queries_in_both_modes() {
    for mode in [PoolMode::Transaction, PoolMode::Session] {
        let proxy = start_proxy(app_config(mode, 2)).await;
        let client = connect(&proxy.app_url())
            .await
            .expect("login through pgweir");
        let rows = client.simple_query("select 1 + 1").await.unwrap();
        assert!(
            matches!(&rows[1], tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("2"))
        );
        let rows = client
            .query_typed(
                "select $1::int4 * 2",
                &[(&21i32, tokio_postgres::types::Type::INT4)],
            )
            .await
            .unwrap();
        assert_eq!(rows[0].get::<_, i32>(0), 42);
        proxy.stop().await;
    }
}
