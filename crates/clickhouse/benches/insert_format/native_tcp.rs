//! Just enough of ClickHouse's native TCP protocol to time an insert of a
//! `Native` block, for the transport comparison in `main.rs`. Not a
//! client: no compression, no settings, one insert per connection.
//!
//! Client revision 54213 is spoken (the newest fields 18.16 and later servers
//! accept without the newer client-info and progress fields).

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;

use clickhouse_client::native::{put_str, put_varuint};

const REVISION: u64 = 54213;

fn get_varuint(r: &mut impl Read) -> std::io::Result<u64> {
    let (mut v, mut shift) = (0u64, 0);
    loop {
        let mut b = [0u8; 1];
        r.read_exact(&mut b)?;
        v |= u64::from(b[0] & 0x7f) << shift;
        if b[0] & 0x80 == 0 {
            return Ok(v);
        }
        shift += 7;
    }
}

fn get_str(r: &mut impl Read) -> std::io::Result<String> {
    let n = get_varuint(r)? as usize;
    let mut s = vec![0u8; n];
    r.read_exact(&mut s)?;
    Ok(String::from_utf8_lossy(&s).into_owned())
}

fn skip(r: &mut impl Read, n: usize) -> std::io::Result<()> {
    std::io::copy(&mut r.take(n as u64), &mut std::io::sink()).map(|_| ())
}

fn other(msg: String) -> std::io::Error {
    std::io::Error::other(msg)
}

/// Block info of a data packet: is_overflows = 0, bucket_num = -1.
fn put_block_info(o: &mut Vec<u8>) {
    put_varuint(o, 1);
    o.push(0);
    put_varuint(o, 2);
    o.extend_from_slice(&(-1i32).to_le_bytes());
    put_varuint(o, 0);
}

/// A native-protocol connection that has said hello.
#[derive(Debug)]
pub struct NativeConn {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl NativeConn {
    pub fn connect(addr: &str) -> std::io::Result<Self> {
        let w = TcpStream::connect(addr)?;
        w.set_nodelay(true)?;
        let mut c = Self {
            r: BufReader::with_capacity(64 * 1024, w.try_clone()?),
            w,
        };
        let mut o = Vec::new();
        put_varuint(&mut o, 0); // Hello
        put_str(&mut o, "ingestion-engine-bench");
        put_varuint(&mut o, 1);
        put_varuint(&mut o, 0);
        put_varuint(&mut o, REVISION);
        put_str(&mut o, "default"); // database
        put_str(&mut o, "default"); // user
        put_str(&mut o, ""); // password
        c.w.write_all(&o)?;
        match get_varuint(&mut c.r)? {
            0 => {
                get_str(&mut c.r)?; // server name
                get_varuint(&mut c.r)?;
                get_varuint(&mut c.r)?;
                let rev = get_varuint(&mut c.r)?;
                if rev >= 54058 {
                    get_str(&mut c.r)?; // time zone
                }
                Ok(c)
            }
            2 => Err(other(c.exception()?)),
            p => Err(other(format!("unexpected packet {p} after hello"))),
        }
    }

    fn exception(&mut self) -> std::io::Result<String> {
        let code = {
            let mut b = [0u8; 4];
            self.r.read_exact(&mut b)?;
            i32::from_le_bytes(b)
        };
        let _name = get_str(&mut self.r)?;
        let msg = get_str(&mut self.r)?;
        Ok(format!("ClickHouse error {code}: {msg}"))
    }

    /// Reads the server's answer until the block header (packet Data) or end.
    fn read_until(&mut self, want_data: bool) -> std::io::Result<()> {
        loop {
            match get_varuint(&mut self.r)? {
                1 if want_data => {
                    // The table's header block: name, info, columns with 0 rows.
                    get_str(&mut self.r)?;
                    loop {
                        match get_varuint(&mut self.r)? {
                            0 => break,
                            1 => skip(&mut self.r, 1)?,
                            2 => skip(&mut self.r, 4)?,
                            f => return Err(other(format!("block info field {f}"))),
                        }
                    }
                    let cols = get_varuint(&mut self.r)?;
                    let rows = get_varuint(&mut self.r)?;
                    if rows != 0 {
                        return Err(other("header block with rows".into()));
                    }
                    for _ in 0..cols {
                        get_str(&mut self.r)?;
                        get_str(&mut self.r)?;
                    }
                    return Ok(());
                }
                2 => return Err(other(self.exception()?)),
                3 => {
                    // Progress: rows, bytes, total rows.
                    for _ in 0..3 {
                        get_varuint(&mut self.r)?;
                    }
                }
                5 if !want_data => return Ok(()),
                6 => {
                    // Profile info.
                    for _ in 0..3 {
                        get_varuint(&mut self.r)?;
                    }
                    skip(&mut self.r, 1)?;
                    get_varuint(&mut self.r)?;
                    skip(&mut self.r, 1)?;
                }
                p => return Err(other(format!("unexpected packet {p}"))),
            }
        }
    }

    /// `INSERT INTO {table} VALUES` with each of `blocks` (as written by
    /// `EventsBlock::encode`) sent as one data packet.
    pub fn insert(&mut self, table: &str, blocks: &[&[u8]]) -> std::io::Result<()> {
        let mut o = Vec::new();
        put_varuint(&mut o, 1); // Query
        put_str(&mut o, ""); // query id
        o.push(1); // initial query
        put_str(&mut o, ""); // initial user
        put_str(&mut o, ""); // initial query id
        put_str(&mut o, "0.0.0.0:0");
        o.push(1); // interface: TCP
        put_str(&mut o, ""); // OS user
        put_str(&mut o, "bench"); // hostname
        put_str(&mut o, "ingestion-engine-bench");
        put_varuint(&mut o, 1);
        put_varuint(&mut o, 0);
        put_varuint(&mut o, REVISION);
        put_str(&mut o, ""); // quota key
        put_str(&mut o, ""); // end of settings
        put_varuint(&mut o, 2); // stage: complete
        put_varuint(&mut o, 0); // no compression
        put_str(&mut o, &format!("INSERT INTO {table} VALUES"));
        // The empty data block that ends the (absent) external tables.
        Self::data_head(&mut o);
        put_varuint(&mut o, 0);
        put_varuint(&mut o, 0);
        self.w.write_all(&o)?;
        self.read_until(true)?;
        for b in blocks {
            let mut head = Vec::with_capacity(16);
            Self::data_head(&mut head);
            self.w.write_all(&head)?;
            self.w.write_all(b)?;
        }
        let mut end = Vec::new();
        Self::data_head(&mut end);
        put_varuint(&mut end, 0);
        put_varuint(&mut end, 0);
        self.w.write_all(&end)?;
        self.read_until(false)
    }

    fn data_head(o: &mut Vec<u8>) {
        put_varuint(o, 2); // Data
        put_str(o, ""); // table name
        put_block_info(o);
    }
}
