//! End-to-end tests over real sockets: an activator (in-process, or the real binary where a test
//! is about the process itself) in front of real replica processes (`activator-echo`).

mod e2e {
    pub mod support;

    mod activation;
    mod binary;
    mod bursts;
    mod dashboard;
    mod deploy;
    mod grpc;
    mod kube;
    mod limits;
    mod manifests;
    mod proxying;
    mod replicas;
    mod requests;
    mod routing;
    mod scaling;
    mod tenancy;
}
