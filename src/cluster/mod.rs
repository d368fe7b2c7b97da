//! Kubernetes side: typed views of the objects vmrecover reads and the requests it makes.
