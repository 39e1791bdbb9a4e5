module github.com/disco-lb/disco/.ci/modcheck

go 1.26.0
