mod common;
use common::*;

#[test]
#[ignore = "prints what the vectors decode to"]
fn explore() {
    for v in [
        "h2c-kubectl.txt",
        "http1-kubectl.txt",
        "etcd-apiserver.txt",
        "cri-kubelet.txt",
        "cri-kubelet-run.txt",
    ] {
        println!("== {v}");
        for m in replay(&chunks(v), AGENT_CAP) {
            println!("{:?}", m.summary());
        }
    }
}
