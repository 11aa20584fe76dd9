//! The cluster-aware budget's eyes: one monitor connection per server (logged in like
//! a pool's, named `pgweir-scale`), asking every `cluster_check_interval` for
//! `max_connections`, `superuser_reserved_connections`, the client backends open and
//! how many pgweir instances watch the same server. Cheap: one row from settings and
//! `pg_stat_activity`, no table touched.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use weir_pool::ManageConnection;
use weir_proxy::io::read_frame;
use weir_proxy::pools::ServerManager;
use weir_proxy::server::ServerConn;
use weir_scale::budget::ClusterReading;

/// The application name monitor connections carry: how instances count each other.
pub const MONITOR_NAME: &str = "pgweir-scale";

const QUERY: &str = "SELECT current_setting('max_connections')::int, \
     current_setting('superuser_reserved_connections')::int, \
     (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int, \
     (SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgweir-scale')::int";

/// Longest a monitor connect or query may take.
const DEADLINE: Duration = Duration::from_secs(2);

/// Largest reply message accepted from the monitor query.
const MAX_MESSAGE: usize = 64 * 1024;

/// Why a reading failed.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// Connecting or logging in failed.
    #[error("monitor connect failed: {0}")]
    Connect(String),
    /// The query failed or the connection broke.
    #[error("monitor query failed: {0}")]
    Query(String),
    /// It took longer than the deadline.
    #[error("monitor timed out")]
    Timeout,
}

/// A monitor connection to one server.
pub struct Monitor {
    conn: ServerConn,
}

impl Monitor {
    /// Opens a monitor connection the way `manager` logs in; it is pgweir's own, outside
    /// `max_db_connections` (its share there is given back at once).
    ///
    /// # Errors
    /// [`MonitorError`] when the login or the naming fails.
    pub async fn open(manager: &ServerManager) -> Result<Monitor, MonitorError> {
        let conn = tokio::time::timeout(DEADLINE, manager.connect())
            .await
            .map_err(|_| MonitorError::Timeout)?
            .map_err(|e| MonitorError::Connect(e.to_string()))?;
        let mut m = Monitor { conn: *conn };
        m.conn.db_permit = None;
        m.conn.user_permit = None;
        m.query(&format!("SET application_name = '{MONITOR_NAME}'"))
            .await?;
        Ok(m)
    }

    /// One reading.
    ///
    /// # Errors
    /// [`MonitorError`] when the query fails; the connection should then be dropped.
    pub async fn read(&mut self) -> Result<ClusterReading, MonitorError> {
        let row = self.query(QUERY).await?;
        let num = |i: usize| -> Result<u32, MonitorError> {
            row.get(i)
                .and_then(|v| v.as_deref())
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| {
                    MonitorError::Query(format!("column {i} of the reading is not a number"))
                })
        };
        Ok(ClusterReading {
            max_connections: num(0)?,
            superuser_reserved: num(1)?,
            connections: num(2)?,
            peers: num(3)?.max(1),
        })
    }

    /// Runs `sql` (simple protocol) and returns its last row's columns as text.
    async fn query(&mut self, sql: &str) -> Result<Vec<Option<String>>, MonitorError> {
        tokio::time::timeout(DEADLINE, self.query_inner(sql))
            .await
            .map_err(|_| MonitorError::Timeout)?
    }

    async fn query_inner(&mut self, sql: &str) -> Result<Vec<Option<String>>, MonitorError> {
        let mut out = BytesMut::new();
        weir_wire::build::put_query(&mut out, sql);
        let fail = |e: &dyn std::fmt::Display| MonitorError::Query(e.to_string());
        self.conn
            .stream
            .write_all(&out)
            .await
            .map_err(|e| fail(&e))?;
        let mut row = Vec::new();
        let mut error = None;
        loop {
            let frame = read_frame(&mut self.conn.stream, &mut self.conn.rbuf, MAX_MESSAGE)
                .await
                .map_err(|e| fail(&e))?;
            match frame.tag() {
                b'D' => {
                    row = parse_data_row(frame.body()).ok_or_else(|| fail(&"malformed DataRow"))?
                }
                b'E' => error = Some(String::from_utf8_lossy(frame.body()).replace('\0', " ")),
                b'Z' => break,
                _ => {}
            }
        }
        match error {
            Some(e) => Err(MonitorError::Query(e.trim().to_owned())),
            None => Ok(row),
        }
    }
}

/// The columns of a DataRow body as text (`None` for NULL); `None` if malformed.
pub fn parse_data_row(body: &[u8]) -> Option<Vec<Option<String>>> {
    let count = u16::from_be_bytes(body.get(0..2)?.try_into().ok()?);
    let mut at = 2usize;
    let mut cols = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let len = i32::from_be_bytes(body.get(at..at + 4)?.try_into().ok()?);
        at += 4;
        if len < 0 {
            cols.push(None);
            continue;
        }
        let len = usize::try_from(len).ok()?;
        let value = body.get(at..at.checked_add(len)?)?;
        at += len;
        cols.push(Some(String::from_utf8_lossy(value).into_owned()));
    }
    Some(cols)
}

#[cfg(test)]
mod tests {
    use super::parse_data_row;

    #[test]
    fn data_rows_are_bounded_by_their_frame() {
        let mut body = vec![0, 2, 0, 0, 0, 2, b'3', b'0'];
        body.extend_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(
            parse_data_row(&body),
            Some(vec![Some("30".to_owned()), None])
        );
        assert_eq!(parse_data_row(&[0, 1, 0, 0, 0, 9, b'x']), None);
        assert_eq!(parse_data_row(&[0]), None);
    }
}
