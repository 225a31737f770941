module mnist-service/cluster/pause

go 1.24
